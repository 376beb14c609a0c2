from django.apps import AppConfig


class MonitorConfig(AppConfig):
    name = "monitor"
    verbose_name = "Broker monitor"

    def ready(self) -> None:
        from monitor import checks  # noqa: F401  (registers the system checks)
