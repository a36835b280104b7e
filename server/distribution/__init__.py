"""Distributors (推广员): applications and approval, the two tiers, sales grades, promotion materials."""
