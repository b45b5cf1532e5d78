from __future__ import annotations

from django import forms

from operations.models import CampaignNotifications, ContributorPrefs


class CampaignNotificationsForm(forms.ModelForm):
    webhook_url = forms.URLField(
        required=False,
        max_length=500,
        assume_scheme="https",
        label="Webhook URL",
        help_text="We POST a signed JSON event to this address (https recommended).",
    )

    class Meta:
        model = CampaignNotifications
        fields = ["email", "webhook_url", "stall_minutes"]
        labels = {
            "email": "Email the organization's owners",
            "stall_minutes": "Stalled after (minutes)",
        }
        help_texts = {
            "email": "when the campaign completes, fails or stalls.",
            "stall_minutes": "A running campaign with no finished task for this long is "
            "reported once. Empty: the platform's default.",
        }

    def clean_webhook_url(self) -> str:
        url = str(self.cleaned_data.get("webhook_url") or "")
        if url:
            # Said now rather than in the delivery log at the first event.
            from operations.notifications import WebhookError, check_webhook_url

            try:
                check_webhook_url(url)
            except WebhookError as exc:
                raise forms.ValidationError(str(exc)) from exc
        return url

    def clean_stall_minutes(self) -> int | None:
        value = self.cleaned_data.get("stall_minutes")
        if value is not None and not 1 <= value <= 7 * 24 * 60:
            raise forms.ValidationError("Between 1 minute and a week.")
        return value


class EmailPrefsForm(forms.ModelForm):
    class Meta:
        model = ContributorPrefs
        fields = ["weekly_summary"]
        labels = {"weekly_summary": "Send me a weekly summary of my contributions"}
