from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('mesh', '0005_audit_certificate_renewed'),
    ]

    operations = [
        migrations.AddField(
            model_name='node',
            name='candidates',
            field=models.JSONField(
                blank=True, default=list,
                help_text="UDP candidates the agent reported besides its endpoint: [source, ip, port] "
                          "with source 'local' or 'reflexive' (validated, at most 15)",
            ),
        ),
    ]
