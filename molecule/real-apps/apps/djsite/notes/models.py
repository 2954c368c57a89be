from django.db import models


class Note(models.Model):
    text = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "text": self.text, "created": self.created.isoformat()}
