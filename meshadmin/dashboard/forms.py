"""Dashboard forms: they check the shape of the input; the services check the meaning."""

from __future__ import annotations

from datetime import timedelta

from django import forms

from meshadmin.mesh.choices import AuditAction, NodeStatus, PolicyDefault, RuleProtocol
from meshadmin.mesh.models import Network, Node
from meshadmin.mesh.services.errors import ServiceError

__all__ = [
    "ApiKeyCreateForm",
    "AuditFilterForm",
    "DnsSuffixForm",
    "GroupForm",
    "MoveRuleForm",
    "NodeFilterForm",
    "NodeTagsForm",
    "PolicyDefaultForm",
    "RenameNodeForm",
    "RouteCreateForm",
    "RuleForm",
    "TagForm",
    "TokenCreateForm",
    "service_error_to_form",
]


def service_error_to_form(form: forms.Form, exc: ServiceError) -> None:
    """Put a service's refusal next to the field it names ("sources: no tag named ..."), or above
    the form when it names none of the form's fields."""
    field, sep, message = exc.detail.partition(": ")
    if sep and field in form.fields:
        form.add_error(field, message)
    else:
        form.add_error(None, exc.detail)

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
    ephemeral = forms.BooleanField(
        required=False, label="Ephemeral",
        help_text="Nodes enrolled with it are deleted once the server has not heard from them for a while "
                  "(30 minutes by default): CI runners, containers.",
    )
    tags = forms.CharField(
        required=False, max_length=1000, label="Tags",
        help_text="Names of existing tags, comma-separated: every node enrolled with it carries them.",
    )
    node_name = forms.CharField(
        required=False, max_length=63, label="Node name (for the command line)",
        help_text="Only fills in --name in the command shown; the node chooses its name when it enrolls.",
    )

    def ttl(self) -> timedelta:
        return EXPIRY[self.cleaned_data["expires"]]

    def tag_names(self) -> list[str]:
        return [t.strip() for t in self.cleaned_data["tags"].split(",") if t.strip()]


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


API_KEY_EXPIRY_CHOICES = [
    ("30d", "30 days"),
    ("90d", "90 days"),
    ("365d", "1 year"),
    ("never", "never"),
]
API_KEY_EXPIRY = {
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
    "365d": timedelta(days=365),
    "never": None,
}


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=63, strip=True, help_text="What the key is for, like ci-deploy.")
    read_only = forms.BooleanField(
        required=False, label="Read-only",
        help_text="The key may only read (GET); every write is refused with 403.",
    )
    expires = forms.ChoiceField(choices=API_KEY_EXPIRY_CHOICES, initial="90d")
    network = forms.ModelChoiceField(
        queryset=Network.objects.order_by("name"), required=False, to_field_name="name",
        empty_label="Every network",
        help_text="A key for one network sees and changes that network only; the others do not exist for it.",
    )
    allowed_from = forms.CharField(
        required=False, max_length=2000, label="Allowed from",
        help_text="Addresses or prefixes the key may be used from, like 198.51.100.0/24, 2001:db8::/32; "
                  "empty: anywhere. From any other address the key is refused.",
    )

    def ttl(self) -> timedelta | None:
        return API_KEY_EXPIRY[self.cleaned_data["expires"]]


# --------------------------------------------------------------------------- access policy
# Shapes only; the services (meshadmin/mesh/services/policies.py) check names, selectors and
# ports, and their refusals go next to the field they name (service_error_to_form).

SELECTOR_HELP = "Comma-separated: * (every node), tag:NAME, group:NAME or node:NAME."
DESTINATION_HELP = ("Comma-separated: * (every node), tag:NAME, group:NAME, node:NAME, or internet "
                    "(addresses outside the mesh, through an exit node).")


class RuleForm(forms.Form):
    sources = forms.CharField(max_length=4000, help_text=SELECTOR_HELP, label="From")
    destinations = forms.CharField(max_length=4000, help_text=DESTINATION_HELP, label="To")
    protocol = forms.ChoiceField(choices=RuleProtocol.choices, initial=RuleProtocol.ANY)
    ports = forms.CharField(required=False, max_length=1000,
                            help_text="tcp and udp only: 22, 8000-8080; empty for every port.")
    description = forms.CharField(required=False, max_length=200)
    position = forms.IntegerField(required=False, min_value=1, help_text="Empty: at the end.")


class MoveRuleForm(forms.Form):
    position = forms.IntegerField(min_value=1)


class PolicyDefaultForm(forms.Form):
    default = forms.ChoiceField(choices=PolicyDefault.choices, widget=forms.RadioSelect)


class TagForm(forms.Form):
    name = forms.CharField(max_length=63)
    description = forms.CharField(required=False, max_length=200)


class GroupForm(forms.Form):
    name = forms.CharField(max_length=63)
    members = forms.CharField(required=False, max_length=4000,
                              help_text="Comma-separated: *, tag:NAME or node:NAME.")
    description = forms.CharField(required=False, max_length=200)


class NodeTagsForm(forms.Form):
    tags = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple)

    def __init__(self, *args, choices: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["tags"].choices = [(n, n) for n in choices]  # type: ignore[attr-defined]
