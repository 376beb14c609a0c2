"""The WSGI application Gunicorn serves. It refuses to start without the broker's secret
(fail closed): WSGI servers run no system checks."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "web.settings")
application = get_wsgi_application()

from brokerauth.checks import require_broker_secret  # noqa: E402 - needs the apps loaded

require_broker_secret()
