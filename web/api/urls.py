from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from web.api import views

router = DefaultRouter()
router.register("accounts", views.AccountViewSet)
router.register("groups", views.GroupViewSet)
router.register("rules", views.RuleViewSet)
router.register("client-ids", views.ClientIdViewSet)
router.register("clients", views.ClientViewSet, basename="client")
router.register("sessions", views.SessionViewSet)
router.register("broker/stats", views.BrokerStatViewSet)
router.register("broker/samples", views.BrokerSampleViewSet)
router.register("audit", views.AuditViewSet)
router.register("operator-actions", views.OperatorActionViewSet)

urlpatterns = [
    path("explain/", views.explain, name="api-explain"),
    path("telemetry/", views.telemetry, name="api-telemetry"),
    path("test-service/", views.test_service, name="api-test-service"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path(
        "redoc/",
        SpectacularRedocView.as_view(url_name="api-schema", template_name="web/redoc.html"),
        name="api-redoc",
    ),
    path("", include(router.urls)),
]
