from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from web import metrics
from web.views import accounts, audit, clients, dashboard, status, testservice

urlpatterns = [
    path("", include("brokerauth.urls")),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", dashboard.dashboard, name="dashboard"),
    path("clients/", clients.client_list, name="clients"),
    path("clients/<int:pk>/", clients.client_detail, name="client"),
    path("accounts/", accounts.account_list, name="accounts"),
    path("accounts/new/", accounts.account_create, name="account-create"),
    path("accounts/explain/", accounts.explain, name="explain"),
    path("accounts/<int:pk>/", accounts.account_detail, name="account"),
    path("accounts/<int:pk>/active/", accounts.account_set_active, name="account-active"),
    path("accounts/<int:pk>/reset-password/", accounts.account_reset, name="account-reset"),
    path("audit/", audit.audit, name="audit"),
    path("test-service/", testservice.test_service, name="test-service"),
    path("status/", status.status, name="status"),
    path("metrics", metrics.metrics, name="metrics"),
    path("api/v1/", include("web.api.urls")),
]
