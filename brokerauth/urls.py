from django.urls import re_path

from brokerauth import views

# No trailing-slash redirects: go-auth follows a redirect as a GET without its body.
urlpatterns = [
    re_path(r"^mqtt/auth/user/?$", views.user, name="mqtt-auth-user"),
    re_path(r"^mqtt/auth/superuser/?$", views.superuser, name="mqtt-auth-superuser"),
    re_path(r"^mqtt/auth/acl/?$", views.acl_check, name="mqtt-auth-acl"),
]
