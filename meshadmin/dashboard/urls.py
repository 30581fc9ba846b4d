from django.urls import path

from . import views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("map/", views.map_page, name="map"),
    path("map/graph.json", views.graph_json, name="graph"),
    path("nodes/", views.nodes, name="nodes"),
    path("nodes/<str:peer_id>/", views.node_detail, name="node"),
    path("nodes/<str:peer_id>/series.json", views.node_series, name="node_series"),
    path("nodes/<str:peer_id>/rename", views.node_rename, name="node_rename"),
    path("nodes/<str:peer_id>/revoke", views.node_revoke, name="node_revoke"),
    path("nodes/<str:peer_id>/delete", views.node_delete, name="node_delete"),
    path("nodes/<str:peer_id>/exit", views.node_exit, name="node_exit"),
    path("nodes/<str:peer_id>/use-exit", views.node_use_exit, name="node_use_exit"),
    path("networks/<int:pk>/dns", views.network_dns, name="network_dns"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/new", views.token_create, name="token_create"),
    path("tokens/<int:pk>/revoke", views.token_revoke, name="token_revoke"),
    path("routes/", views.routes, name="routes"),
    path("routes/new", views.route_create, name="route_create"),
    path("routes/<int:pk>/approve", views.route_approve, name="route_approve"),
    path("routes/<int:pk>/reject", views.route_reject, name="route_reject"),
    path("audit/", views.audit, name="audit"),
]
