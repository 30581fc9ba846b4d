"""Root URLconf: the admin, the JSON API and the dashboard (at the root)."""

from django.contrib import admin
from django.urls import include, path

from meshadmin.api.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("", include("meshadmin.dashboard.urls")),
]
