"""The Ryu SDN controller: routing, IP anycast, multicast group trees, REST API."""
