"""How a service process is assembled: its runtime (database, broker, relay, consumers,
background loops), its HTTP app and the operations routes every service has. No domain."""
