-- Stampede's shared state (STAMPEDE_STATE_URL) beside Airflow's metadata database.
CREATE DATABASE stampede OWNER airflow;
