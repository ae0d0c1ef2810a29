"""The opportunity service: the sales pipeline (later referrals, VIP signing, campaigns) (``crm.opportunity.v1``)."""
