from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "web"
    verbose_name = "Operator UI"

    def ready(self) -> None:
        from web import checks  # noqa: F401  (registers the system checks)
