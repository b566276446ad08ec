"""skyops: the science and platform code of the skyops survey operations system.

Nothing under this package imports Airflow: a step runs the same in a Kubernetes pod,
an HTCondor job or on a laptop (``skyops step run NAME ...``). Airflow adapters live in
:mod:`skyops.operators` and :mod:`skyops.plugins`.
"""
__version__ = "0.1.0"
