"""What the user meets: the magics, the status widget, background results, the comm pump."""
