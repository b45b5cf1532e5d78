from django.urls import path

from campaigns import views

urlpatterns = [
    path("", views.home, name="home"),
    path("campaigns/public.json", views.public_campaigns, name="public-campaigns"),
]
