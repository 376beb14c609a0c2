from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from monitor import testservice
from web.views import staff_required


@login_required
def test_service(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return run(request)
    return render(request, "web/test_service.html", {"steps": None})


@staff_required
def run(request: HttpRequest) -> HttpResponse:
    steps = testservice.configured_round_trip()
    context = {"steps": steps, "ok": testservice.passed(steps)}
    template = "web/_steps.html" if request.headers.get("HX-Request") else "web/test_service.html"
    return render(request, template, context)
