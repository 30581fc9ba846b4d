"""The JSON API (django-ninja): schemas, bearer auth, rate limits and the endpoints."""
