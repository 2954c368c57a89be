"""What changes from one version of items to the next: the table's columns and the API's shapes.

Version 1: items(id, name).
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


class ItemIn(BaseModel):
    """Body of POST /items; unknown fields (color, before version 2) are refused with 422."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)


class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
