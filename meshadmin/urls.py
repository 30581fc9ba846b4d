"""Root URLconf: the admin and the JSON API."""

from django.contrib import admin
from django.urls import path

from meshadmin.api.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
]
