from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "meshadmin.dashboard"
    label = "dashboard"
    verbose_name = "ShadowMesh dashboard"

    def ready(self) -> None:
        from . import signals  # noqa: F401  (logout closes the user's dashboard sockets)
