from django.urls import path

from workers.consumers import WorkConsumer

websocket_urlpatterns = [path("ws/work/", WorkConsumer.as_asgi())]
