from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from .models import Note


@login_required
def notes(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        note = Note.objects.create(owner=request.user, text=request.POST["text"])
        messages.success(request, f"Note saved: {note.text}")
        return redirect("notes")
    return render(request, "notes/notes.html", {"notes": Note.objects.filter(owner=request.user)})


def public(request: HttpRequest) -> HttpResponse:
    return HttpResponse("<h1>mysite</h1><p>a public page</p>")
