"""What changes from one version of items to the next: the table's columns and the API's shapes.

Version 2: items(id, name, color), color nullable (migration 0002).
"""

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    color: Mapped[str | None] = mapped_column(Text)


class ItemIn(BaseModel):
    """Body of POST /items; unknown fields are refused with 422."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    color: str | None = Field(default=None, max_length=50)


class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    color: str | None
