"""Policy serving: `kivla serve` over openpi's websocket + msgpack protocol, clients, dynamic batching."""
