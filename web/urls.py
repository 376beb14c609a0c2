from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from web import metrics
from web.views import accounts, audit, clients, dashboard, groups, rules, status, testservice

account_urls = [
    path("", accounts.account_detail, name="account"),
    path("edit/", accounts.account_edit, name="account-edit"),
    path("active/", accounts.account_set_active, name="account-active"),
    path("reset-password/", accounts.account_reset, name="account-reset"),
    path("client-ids/release/", accounts.account_release_client_id, name="account-release"),
    path("rules/new/", rules.account_rule_create, name="account-rule-create"),
    path("groups/", groups.account_join, name="account-join"),
    path("groups/<int:group_pk>/remove/", groups.account_leave, name="account-leave"),
]

group_urls = [
    path("", groups.group_detail, name="group"),
    path("edit/", groups.group_edit, name="group-edit"),
    path("delete/", groups.group_delete, name="group-delete"),
    path("rules/new/", rules.group_rule_create, name="group-rule-create"),
    path("members/", groups.member_add, name="group-member-add"),
    path("members/<int:account_pk>/remove/", groups.member_remove, name="group-member-remove"),
]

urlpatterns = [
    path("", include("brokerauth.urls")),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", dashboard.dashboard, name="dashboard"),
    path("dashboard/live/", dashboard.dashboard_live, name="dashboard-live"),
    path("dashboard/series/", dashboard.broker_series, name="broker-series"),
    path("clients/", clients.client_list, name="clients"),
    path("clients/<int:pk>/", clients.client_detail, name="client"),
    path("clients/<int:pk>/live/", clients.client_live, name="client-live"),
    path("clients/<int:pk>/disconnect/", clients.client_disconnect, name="client-disconnect"),
    path("clients/<int:pk>/series/", clients.client_series, name="client-series"),
    path("accounts/", accounts.account_list, name="accounts"),
    path("accounts/new/", accounts.account_create, name="account-create"),
    path("accounts/explain/", accounts.explain, name="explain"),
    path("accounts/<int:pk>/", include(account_urls)),
    path("groups/", groups.group_list, name="groups"),
    path("groups/new/", groups.group_create, name="group-create"),
    path("groups/<int:pk>/", include(group_urls)),
    path("rules/<int:pk>/edit/", rules.rule_edit, name="rule-edit"),
    path("rules/<int:pk>/delete/", rules.rule_delete, name="rule-delete"),
    path("audit/", audit.audit, name="audit"),
    path("audit/operators/", audit.operator_actions, name="operator-actions"),
    path("test-service/", testservice.test_service, name="test-service"),
    path("status/", status.status, name="status"),
    path("metrics", metrics.metrics, name="metrics"),
    path("api/v1/", include("web.api.urls")),
]
handler404 = "web.api.errors.not_found"
