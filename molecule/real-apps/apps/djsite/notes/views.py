"""djsite's views: async, so a worker's event loop serves them without a thread per request."""

import json
import re

from asgiref.sync import sync_to_async
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from notes.models import Note

MEDIA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@require_GET
async def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain; charset=utf-8")


@require_GET
async def index(request: HttpRequest) -> HttpResponse:
    return render(request, "notes/index.html", {"count": await Note.objects.acount()})


@csrf_exempt
@require_http_methods(["GET", "POST"])
async def notes(request: HttpRequest) -> HttpResponse:
    """GET: every note, oldest first. POST {"text": "..."}: a new note (201)."""
    if request.method == "GET":
        return JsonResponse([note.as_dict() async for note in Note.objects.all()], safe=False)
    try:
        payload = json.loads(request.body)
    except ValueError:
        return JsonResponse({"error": "the body must be JSON"}, status=400)
    text = payload.get("text") if isinstance(payload, dict) else None
    if not isinstance(text, str) or not text.strip():
        return JsonResponse({"error": 'expected {"text": "..."}'}, status=400)
    note = await Note.objects.acreate(text=text)
    return JsonResponse(note.as_dict(), status=201)


def valid_media_name(name: str) -> bool:
    return bool(MEDIA_NAME.fullmatch(name)) and ".." not in name


def save_media(name: str, data: bytes) -> str:
    # The default storage overwrites (STORAGES in settings): the name stays the one asked for.
    return default_storage.save(name, ContentFile(data))


def read_media(name: str) -> bytes:
    with default_storage.open(name, "rb") as handle:
        return handle.read()


@csrf_exempt
@require_http_methods(["PUT"])
async def put_media(request: HttpRequest, name: str) -> HttpResponse:
    """PUT /media/NAME: the raw body, stored under MEDIA_ROOT by the default storage."""
    if not valid_media_name(name):
        return JsonResponse({"error": "invalid name"}, status=400)
    data = request.body
    saved = await sync_to_async(save_media)(name, data)
    return JsonResponse({"name": saved, "size": len(data)}, status=201)


@require_GET
async def media_check(request: HttpRequest, name: str) -> HttpResponse:
    """GET /media-check/NAME: the bytes stored by PUT /media/NAME, or 404."""
    if not valid_media_name(name):
        return JsonResponse({"error": "invalid name"}, status=400)
    try:
        data = await sync_to_async(read_media)(name)
    except FileNotFoundError:
        return JsonResponse({"error": f"no media named {name}"}, status=404)
    return HttpResponse(data, content_type="application/octet-stream")
