# Each node's certificate fingerprint, kept beside the certificate: a netmap load reads it instead
# of every certificate of the network (about 7 KB each).

from django.db import migrations, models


def fill(apps, schema_editor):
    from meshadmin.mesh.models.nodes import certificate_fingerprint

    Node = apps.get_model("mesh", "Node")
    batch = []
    rows = Node.objects.order_by("pk").values_list("pk", "certificate")
    for pk, certificate in rows.iterator(chunk_size=500):
        batch.append(Node(pk=pk, certificate_fingerprint=certificate_fingerprint(bytes(certificate or b""))))
        if len(batch) >= 500:
            Node.objects.bulk_update(batch, ["certificate_fingerprint"])
            batch = []
    if batch:
        Node.objects.bulk_update(batch, ["certificate_fingerprint"])


class Migration(migrations.Migration):

    dependencies = [
        ('mesh', '0009_api_keys'),
    ]

    operations = [
        migrations.AddField(
            model_name='node',
            name='certificate_fingerprint',
            field=models.CharField(blank=True, default='', editable=False, max_length=64),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]
