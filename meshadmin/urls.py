"""Root URLconf: the admin, the JSON API and the dashboard (at the root)."""

from django.contrib import admin
from django.urls import include, path

from meshadmin.api.api import api
from meshadmin.dashboard.views import admin_login

urlpatterns = [
    path("admin/login/", admin_login),  # the admin's sign-in, with the dashboard's failure limits
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("", include("meshadmin.dashboard.urls")),
]
