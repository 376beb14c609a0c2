"""The real URLs plus /bench/floor: the cheapest Django view, the framework's floor."""

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from web.urls import urlpatterns as real_urlpatterns


@csrf_exempt
def floor(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b'{"ok": true, "error": ""}', content_type="application/json")


urlpatterns = [path("bench/floor", floor), *real_urlpatterns]
