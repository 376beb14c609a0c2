from django.apps import AppConfig


class BrokerauthConfig(AppConfig):
    name = "brokerauth"
    verbose_name = "MQTT accounts and ACLs"

    def ready(self) -> None:
        from brokerauth import checks  # noqa: F401  (registers the system checks)
