"""The shipped configs (YAML, one folder per kind), installed as the data package ``brainstream.configs``.

Found by name through ``brainstream.models.config_base.resolve_config_path``; ``brainstream config list``
shows them beside the user's own folders.
"""
