from django.urls import re_path

from brokerauth import rabbitmq, views

# No trailing-slash redirects: go-auth follows a redirect as a GET without its body.
urlpatterns = [
    re_path(r"^mqtt/auth/user/?$", views.user, name="mqtt-auth-user"),
    re_path(r"^mqtt/auth/superuser/?$", views.superuser, name="mqtt-auth-superuser"),
    re_path(r"^mqtt/auth/acl/?$", views.acl_check, name="mqtt-auth-acl"),
    # The change feed the project's plugin follows (brokerauth/views.py changes).
    re_path(r"^mqtt/auth/changes/?$", views.changes, name="mqtt-auth-changes"),
    # RabbitMQ's auth_http contract (brokerauth/rabbitmq.py).
    re_path(r"^mqtt/auth/rabbitmq/user/?$", rabbitmq.user, name="rabbitmq-auth-user"),
    re_path(r"^mqtt/auth/rabbitmq/vhost/?$", rabbitmq.vhost, name="rabbitmq-auth-vhost"),
    re_path(r"^mqtt/auth/rabbitmq/resource/?$", rabbitmq.resource, name="rabbitmq-auth-resource"),
    re_path(r"^mqtt/auth/rabbitmq/topic/?$", rabbitmq.topic, name="rabbitmq-auth-topic"),
]
