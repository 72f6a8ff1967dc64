// Conversations and settings, kept in this browser's localStorage (nothing is stored on the server).

const CONVERSATIONS = "heylookllm.conversations";
const SETTINGS = "heylookllm.settings";

export function newId() {
  // crypto.randomUUID exists only in secure contexts; a page served over plain http on a LAN address is not one.
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
}

export function newConversation(model) {
  const now = Date.now();
  return { id: newId(), title: "New chat", model, createdAt: now, updatedAt: now, messages: [] };
}

export function loadConversations() {
  try {
    const list = JSON.parse(localStorage.getItem(CONVERSATIONS) || "[]");
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

// Saves the list, newest first. When the browser's quota is full, images of the other conversations are dropped
// (their messages say so); returns a message for the user when even that was not enough, else "".
export function saveConversations(list, keepImagesOf) {
  const attempt = () => localStorage.setItem(CONVERSATIONS, JSON.stringify(list));
  try {
    attempt();
    return "";
  } catch {
    for (const conversation of list) {
      if (conversation.id === keepImagesOf) continue;
      for (const message of conversation.messages) {
        if (message.images?.length) {
          message.imagesDropped = (message.imagesDropped || 0) + message.images.length;
          message.images = [];
        }
      }
    }
    try {
      attempt();
      return "Browser storage was full: images of older conversations were removed.";
    } catch {
      return "Browser storage is full: this conversation is not saved. Delete some conversations.";
    }
  }
}

export const DEFAULT_SETTINGS = { model: "", system: "", temperature: "", top_p: "", max_tokens: "", seed: "" };

export function loadSettings() {
  try {
    return { ...DEFAULT_SETTINGS, ...JSON.parse(localStorage.getItem(SETTINGS) || "{}") };
  } catch {
    return { ...DEFAULT_SETTINGS };
  }
}

export function saveSettings(settings) {
  try {
    localStorage.setItem(SETTINGS, JSON.stringify(settings));
  } catch {
    // settings are small; a full storage only loses them for the next visit
  }
}
