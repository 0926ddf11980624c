"""The drift check (issue 27): where the CRM and QBO disagree, why, and the mend."""
