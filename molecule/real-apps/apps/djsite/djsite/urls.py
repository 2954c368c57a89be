from django.conf import settings
from django.urls import path, re_path
from django.views.static import serve

from notes import views

urlpatterns = [
    path("health", views.health),
    path("", views.index),
    path("notes", views.notes),
    path("media/<str:name>", views.put_media),
    path("media-check/<str:name>", views.media_check),
]

if settings.SERVE_STATIC:
    # Off by default: a proxy in front serves STATIC_ROOT. On (DJANGO_SERVE_STATIC=1), the app
    # serves the collected files itself, for a host without one.
    urlpatterns.append(
        re_path(r"^static/(?P<path>.*)$", serve, {"document_root": settings.STATIC_ROOT})
    )
