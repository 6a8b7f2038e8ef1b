"""The app's tabs, one module each: its handlers (functions of the app's Workbench, which app.py
binds as its methods) and build(), its layout and events. app.py builds the page around them."""
