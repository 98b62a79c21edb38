"""The Telegram handlers, by concern: commands (/start /help /model /k /history /forget /stats /reindex), search
(photos, image files, what cannot be searched, the answers' buttons), gallery (/add /people /remove /rename and their
buttons), persons (the photos layout's /people /name /merge /hide), access (the gatekeeper) and errors. Each is a thin
`async def`: parse the update, call a flow of `context.service` (bot/lifecycle.py), reply. bot/app.py registers them.
"""
