"""The science of skyops' survey campaigns, one package per campaign (``skyops.campaigns.gw`` ...).

A campaign package holds the campaign's steps (registered with :func:`skyops.steps.registry.step`)
and the modules they are built from; nothing here imports Airflow.
"""
