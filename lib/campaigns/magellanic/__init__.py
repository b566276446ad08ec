"""The DECam Magellanic Clouds emission-line mosaics campaign, kred run by Airflow (issue #6)."""
