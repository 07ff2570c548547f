"""Stampede: an Airflow-orchestrated load-testing pipeline.

The package holds every pipeline step as a plain, typed function; DAG files in
``dags/`` only wire them. Importing it must stay cheap and must not import
Airflow or Locust (the Locust subprocess imports parts of it).
"""

__version__ = "0.1.0"
