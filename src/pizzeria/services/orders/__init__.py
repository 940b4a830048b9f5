"""Orders: takes orders, prices them from its copy of the menu, follows them to the end."""
