"""Dashboard forms: they check the shape of the input; the services check the meaning."""

from __future__ import annotations

from datetime import timedelta

from django import forms

from meshadmin.mesh.choices import AuditAction, NodeStatus
from meshadmin.mesh.models import Network, Node

__all__ = [
    "AuditFilterForm",
    "DnsSuffixForm",
    "NodeFilterForm",
    "RenameNodeForm",
    "RouteCreateForm",
    "TokenCreateForm",
]

EXPIRY_CHOICES = [
    ("1h", "1 hour"),
    ("24h", "24 hours"),
    ("7d", "7 days"),
    ("30d", "30 days"),
]
EXPIRY = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}

NODE_SORTS = {
    "name": "name",
    "overlay_ip": "overlay IP",
    "online": "online",
    "last_seen": "last seen",
    "endpoint": "endpoint",
}


class NetworkChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Network) -> str:
        return f"{obj.name} ({obj.overlay_cidr})"


class TokenCreateForm(forms.Form):
    network = NetworkChoiceField(
        queryset=Network.objects.all(), empty_label=None, required=False,
        help_text="Left empty on a fresh install: the default network is created.",
    )
    uses = forms.IntegerField(
        min_value=1, max_value=10_000, initial=1,
        help_text="1 = one-time token; more lets several nodes enroll with it.",
    )
    expires = forms.ChoiceField(choices=EXPIRY_CHOICES, initial="24h")
    is_public = forms.BooleanField(
        required=False, label="Public hub",
        help_text="Nodes enrolled with it are reachable from the internet and may relay for others.",
    )
    node_name = forms.CharField(
        required=False, max_length=63, label="Node name (for the command line)",
        help_text="Only fills in --name in the command shown; the node chooses its name when it enrolls.",
    )

    def ttl(self) -> timedelta:
        return EXPIRY[self.cleaned_data["expires"]]


class RenameNodeForm(forms.Form):
    name = forms.CharField(max_length=63, strip=True)


class DnsSuffixForm(forms.Form):
    suffix = forms.CharField(
        max_length=189, required=False, strip=True, label="DNS suffix",
        help_text="Nodes answer to NAME.SUFFIX; empty: NETWORK.mesh.",
    )


class RouteCreateForm(forms.Form):
    via = forms.ModelChoiceField(
        queryset=Node.objects.filter(status=NodeStatus.ACTIVE).select_related("network"),
        label="Via node", empty_label=None,
    )
    # a field named "prefix": the form metaclass moves it into base_fields, Form.prefix stays None
    prefix = forms.CharField(  # type: ignore[assignment]
        max_length=43, help_text="A subnet behind that node, like 192.168.1.0/24.")
    approve = forms.BooleanField(required=False, label="Approve now")


class NodeFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=100, label="Search")
    status = forms.ChoiceField(
        required=False,
        choices=[("", "all"), ("online", "online"), ("offline", "offline"), ("revoked", "revoked")],
    )
    sort = forms.ChoiceField(required=False, choices=[(k, v) for k, v in NODE_SORTS.items()])
    dir = forms.ChoiceField(required=False, choices=[("asc", "asc"), ("desc", "desc")])


class AuditFilterForm(forms.Form):
    node = forms.CharField(required=False, max_length=63, help_text="name or peer id prefix")
    actor = forms.CharField(required=False, max_length=100)
    action = forms.ChoiceField(required=False, choices=[("", "any type"), *AuditAction.choices])
    since = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
