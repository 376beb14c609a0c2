"""The operator REST API (/api/v1/), Django REST framework."""
