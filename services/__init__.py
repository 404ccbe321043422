"""The reference services the stack observes: gateway, policy, core, office."""
