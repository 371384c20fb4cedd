"""Datasets: Parquet schemas and readers/writers (``parquet``) and the synthetic toy world (``toyworld``)."""
