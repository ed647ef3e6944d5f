"""Airflow 3 UI plugin of clearmark: browse Evidently drift reports, link tasks to them."""
