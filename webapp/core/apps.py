from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "webapp.core"
    label = "core"
    verbose_name = "Cases and review"

    def ready(self) -> None:
        from webapp.core import signals  # noqa: F401  (connects the login audit receivers)
