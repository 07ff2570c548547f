"""The file Locust is given with ``-f``: it imports Stampede's plugin under its package name.

Locust imports ``-f`` files by path under their file name; giving it
``locust_plugin.py`` directly would load a second copy of the plugin as soon as
a locustfile imports ``stampede.load.plugin`` (say, for ``mark_created``),
registering every listener twice. Importing it here keeps exactly one copy.
"""

from stampede.load.plugin import StageShape  # noqa: F401  (Locust finds the load shape here)
