from django.apps import AppConfig


class MeshConfig(AppConfig):
    name = "meshadmin.mesh"
    label = "mesh"
    verbose_name = "Mesh"
    default_auto_field = "django.db.models.BigAutoField"
