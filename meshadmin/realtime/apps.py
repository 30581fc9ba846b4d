from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "meshadmin.realtime"
    label = "realtime"
    verbose_name = "Realtime"

    def ready(self) -> None:
        from meshadmin.mesh.changes import change_announced

        from .tasks import on_change_announced

        change_announced.connect(on_change_announced, dispatch_uid="realtime.push_netmaps")
