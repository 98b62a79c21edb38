"""The bot's flows, each over the `BotRuntime` (bot/runtime.py) and none importing another: search (a photo or an
album searched and answered, its buttons), photos_answer (the photos layout's answer and "More photos"), gallery
(/add /people /remove /rename), persons (the photos layout's /people /name /merge /hide), reindex, and chats (/model
/k /history /forget /stats). Where one flow needs another, bot/lifecycle.py hands it in when it wires them."""
