"""Marketing campaigns: contacts chosen by expected value under a budget (:mod:`engine.marketing.campaign`,
:mod:`engine.marketing.selection`), each with a message from editable templates (:mod:`engine.marketing.templates`)."""

from engine.marketing.campaign import CampaignPlan, Offer, Totals, consent_mask, plan_campaign, read_offers
from engine.marketing.templates import MessageTemplates

__all__ = ["CampaignPlan", "MessageTemplates", "Offer", "Totals", "consent_mask", "plan_campaign", "read_offers"]
