from django.urls import path

from . import policy_views, views

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
    path("nodes/<str:peer_id>/tags", policy_views.node_tags, name="node_tags"),
    path("nodes/<str:peer_id>/reach", policy_views.reach, name="node_reach"),
    path("policy/", policy_views.policy, name="policy"),
    path("policy/default", policy_views.policy_default, name="policy_default"),
    path("policy/rules/new", policy_views.rule_create, name="rule_create"),
    path("policy/rules/<int:pk>/", policy_views.rule_edit, name="rule_edit"),
    path("policy/rules/<int:pk>/move", policy_views.rule_move, name="rule_move"),
    path("policy/rules/<int:pk>/delete", policy_views.rule_delete, name="rule_delete"),
    path("policy/tags/new", policy_views.tag_create, name="tag_create"),
    path("policy/tags/<int:pk>/delete", policy_views.tag_delete, name="tag_delete"),
    path("policy/groups/new", policy_views.group_create, name="group_create"),
    path("policy/groups/<int:pk>/", policy_views.group_edit, name="group_edit"),
    path("policy/groups/<int:pk>/delete", policy_views.group_delete, name="group_delete"),
    path("audit/", views.audit, name="audit"),
]
